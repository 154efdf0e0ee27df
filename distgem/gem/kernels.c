
#include <stdint.h>
#include <string.h>
#define LANES 16
#define BLOCK 256
#define KMAX 64
static inline float ld_f32(const float *p, int64_t i) { return p[i]; }
static inline float ld_bf16(const uint16_t *p, int64_t i) {
    uint32_t u = (uint32_t)p[i] << 16; float f; memcpy(&f, &u, 4); return f;
}
static inline float st_f32(float x) { return x; }
static inline uint16_t st_bf16(float f) {  /* round to nearest even, as torch does */
    uint32_t u; memcpy(&u, &f, 4);
    uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16, nan = (u >> 16) | 0x40u;
    return (uint16_t)(((u & 0x7fffffffu) > 0x7f800000u) ? nan : rounded);  /* a select, so it vectorises */
}
#define TRI(K) ((K) * ((K) + 1) / 2)

/* out (K x K, K = k + 1) += Gram of rows m_0..m_{k-1} (row stride ld) and g over n columns */
#define GRAM_BODY(K, MT, LM, GT, LG)                                                                 \
    double total[TRI(K)]; float acc[TRI(K)][LANES]; float x[K][LANES];                      \
    for (int t = 0; t < TRI(K); t++) total[t] = 0;                                                   \
    int64_t c = 0;                                                                                   \
    for (; c + BLOCK <= n; c += BLOCK) {                                                             \
        for (int t = 0; t < TRI(K); t++) for (int l = 0; l < LANES; l++) acc[t][l] = 0;              \
        for (int64_t b = c; b < c + BLOCK; b += LANES) {                                             \
            for (int i = 0; i < K - 1; i++) for (int l = 0; l < LANES; l++) x[i][l] = LM(m, i * ld + b + l); \
            for (int l = 0; l < LANES; l++) x[K - 1][l] = LG(g, b + l);                               \
            int t = 0;                                                                               \
            for (int i = 0; i < K; i++) for (int j = 0; j <= i; j++, t++)                            \
                for (int l = 0; l < LANES; l++) acc[t][l] += x[i][l] * x[j][l];                      \
        }                                                                                            \
        for (int t = 0; t < TRI(K); t++) { double s = 0; for (int l = 0; l < LANES; l++) s += acc[t][l]; total[t] += s; } \
    }                                                                                                \
    for (; c < n; c++) {                                                                             \
        double y[K]; for (int i = 0; i < K - 1; i++) y[i] = LM(m, i * ld + c); y[K - 1] = LG(g, c); \
        int t = 0; for (int i = 0; i < K; i++) for (int j = 0; j <= i; j++, t++) total[t] += y[i] * y[j]; \
    }                                                                                                \
    int t = 0;                                                                                       \
    for (int i = 0; i < K; i++) for (int j = 0; j <= i; j++, t++) {                                  \
        out[i * K + j] += total[t]; if (i != j) out[j * K + i] += total[t];                          \
    }

/* the same body with K a constant (registers, unrolled) for k = 1..8, and a runtime K up to KMAX */
#define GRAM_FN(SUF, MT, LM, GT, LG)                                                                 \
    static void gram_##SUF##_k(const MT *restrict m, int64_t ld, const GT *restrict g, int64_t n, int K, double *restrict out) { GRAM_BODY(K, MT, LM, GT, LG) } \
    GRAM_FIXED(SUF, MT, LM, GT, LG, 2) GRAM_FIXED(SUF, MT, LM, GT, LG, 3) GRAM_FIXED(SUF, MT, LM, GT, LG, 4)        \
    GRAM_FIXED(SUF, MT, LM, GT, LG, 5) GRAM_FIXED(SUF, MT, LM, GT, LG, 6) GRAM_FIXED(SUF, MT, LM, GT, LG, 7)        \
    GRAM_FIXED(SUF, MT, LM, GT, LG, 8) GRAM_FIXED(SUF, MT, LM, GT, LG, 9)                                           \
    static void gram_##SUF(const MT *m, int64_t ld, const GT *g, int64_t n, int K, double *out) {   \
        switch (K) { case 2: gram_##SUF##_2(m, ld, g, n, out); break; case 3: gram_##SUF##_3(m, ld, g, n, out); break; \
        case 4: gram_##SUF##_4(m, ld, g, n, out); break; case 5: gram_##SUF##_5(m, ld, g, n, out); break;           \
        case 6: gram_##SUF##_6(m, ld, g, n, out); break; case 7: gram_##SUF##_7(m, ld, g, n, out); break;           \
        case 8: gram_##SUF##_8(m, ld, g, n, out); break; case 9: gram_##SUF##_9(m, ld, g, n, out); break;           \
        default: gram_##SUF##_k(m, ld, g, n, K, out); }                                             \
    }
#define GRAM_FIXED(SUF, MT, LM, GT, LG, KK) \
    static void gram_##SUF##_##KK(const MT *restrict m, int64_t ld, const GT *restrict g, int64_t n, double *restrict out) { GRAM_BODY(KK, MT, LM, GT, LG) }

/* g <- round(g + sum_i v_i m_i), in fp32 with one rounding to g's dtype; then, while the block of
   BLOCK columns is in L1, dots_i += m_i . g~ on the value written (fp32 within the block, float64 across) */
#define UPDATE_BODY(K, MT, LM, GT, LG, ST)                                                           \
    float w[K]; double total[K]; float d[K][LANES];                                                  \
    for (int i = 0; i < K; i++) { w[i] = (float)v[i]; total[i] = 0; }                                \
    for (int64_t c = 0; c < n; c += BLOCK) {                                                         \
        int64_t e = c + BLOCK < n ? c + BLOCK : n;                                                   \
        for (int64_t b = c; b < e; b++) {                                                            \
            float u = LG(g, b); for (int i = 0; i < K; i++) u += w[i] * LM(m, i * ld + b);           \
            g[b] = ST(u);                                                                            \
        }                                                                                            \
        if (!dots) continue;                                                                         \
        for (int i = 0; i < K; i++) for (int l = 0; l < LANES; l++) d[i][l] = 0;                     \
        int64_t b = c;                                                                               \
        for (; b + LANES <= e; b += LANES)                                                           \
            for (int i = 0; i < K; i++) for (int l = 0; l < LANES; l++) d[i][l] += LM(m, i * ld + b + l) * LG(g, b + l); \
        for (; b < e; b++) for (int i = 0; i < K; i++) d[i][0] += LM(m, i * ld + b) * LG(g, b);      \
        for (int i = 0; i < K; i++) { double s = 0; for (int l = 0; l < LANES; l++) s += d[i][l]; total[i] += s; } \
    }                                                                                                \
    if (dots) for (int i = 0; i < K; i++) dots[i] += total[i];
#define UPDATE_ARGS(MT, GT) const MT *restrict m, int64_t ld, GT *restrict g, int64_t n, const double *restrict v, double *restrict dots
#define UPDATE_FIXED(SUF, MT, LM, GT, LG, ST, KK) \
    static void update_##SUF##_##KK(UPDATE_ARGS(MT, GT)) { UPDATE_BODY(KK, MT, LM, GT, LG, ST) }
#define UPDATE_FN(SUF, MT, LM, GT, LG, ST)                                                           \
    static void update_##SUF##_k(UPDATE_ARGS(MT, GT), int k) { UPDATE_BODY(k, MT, LM, GT, LG, ST) }  \
    UPDATE_FIXED(SUF, MT, LM, GT, LG, ST, 1) UPDATE_FIXED(SUF, MT, LM, GT, LG, ST, 2)                \
    UPDATE_FIXED(SUF, MT, LM, GT, LG, ST, 3) UPDATE_FIXED(SUF, MT, LM, GT, LG, ST, 4)                \
    UPDATE_FIXED(SUF, MT, LM, GT, LG, ST, 5) UPDATE_FIXED(SUF, MT, LM, GT, LG, ST, 6)                \
    UPDATE_FIXED(SUF, MT, LM, GT, LG, ST, 7) UPDATE_FIXED(SUF, MT, LM, GT, LG, ST, 8)                \
    static void update_##SUF(UPDATE_ARGS(MT, GT), int k) {                                           \
        switch (k) { case 1: update_##SUF##_1(m, ld, g, n, v, dots); break; case 2: update_##SUF##_2(m, ld, g, n, v, dots); break; \
        case 3: update_##SUF##_3(m, ld, g, n, v, dots); break; case 4: update_##SUF##_4(m, ld, g, n, v, dots); break;           \
        case 5: update_##SUF##_5(m, ld, g, n, v, dots); break; case 6: update_##SUF##_6(m, ld, g, n, v, dots); break;           \
        case 7: update_##SUF##_7(m, ld, g, n, v, dots); break; case 8: update_##SUF##_8(m, ld, g, n, v, dots); break;           \
        default: update_##SUF##_k(m, ld, g, n, v, dots, k); }                                        \
    }

GRAM_FN(ff, float, ld_f32, float, ld_f32)
GRAM_FN(fb, float, ld_f32, uint16_t, ld_bf16)
GRAM_FN(bf, uint16_t, ld_bf16, float, ld_f32)
GRAM_FN(bb, uint16_t, ld_bf16, uint16_t, ld_bf16)
UPDATE_FN(ff, float, ld_f32, float, ld_f32, st_f32)
UPDATE_FN(fb, float, ld_f32, uint16_t, ld_bf16, st_bf16)
UPDATE_FN(bf, uint16_t, ld_bf16, float, ld_f32, st_f32)
UPDATE_FN(bb, uint16_t, ld_bf16, uint16_t, ld_bf16, st_bf16)

/* dtype codes: 0 = float32, 1 = bfloat16; memories m (k rows, stride ld), task gradient g */
int distgem_gram(int mt, int gt, const void *m, int64_t ld, const void *g, int64_t n, int k, double *out) {
    if (k < 1 || k + 1 > KMAX) return -1;
    switch (mt * 2 + gt) {
    case 0: gram_ff(m, ld, g, n, k + 1, out); return 0;
    case 1: gram_fb(m, ld, g, n, k + 1, out); return 0;
    case 2: gram_bf(m, ld, g, n, k + 1, out); return 0;
    case 3: gram_bb(m, ld, g, n, k + 1, out); return 0;
    }
    return -1;
}
int distgem_update(int mt, int gt, const void *m, int64_t ld, void *g, int64_t n, int k, const double *v, double *dots) {
    if (k < 1 || k > KMAX) return -1;
    switch (mt * 2 + gt) {
    case 0: update_ff(m, ld, g, n, v, dots, k); return 0;
    case 1: update_fb(m, ld, g, n, v, dots, k); return 0;
    case 2: update_bf(m, ld, g, n, v, dots, k); return 0;
    case 3: update_bb(m, ld, g, n, v, dots, k); return 0;
    }
    return -1;
}
