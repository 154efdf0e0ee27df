"""The distributed seam: ranks and collectives, the DeepSpeed adapter, sharded checkpoints.

Nothing outside this package imports torch.distributed or deepspeed."""
