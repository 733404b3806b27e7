"""Training-speed pieces shared by the stages: the chunked causal-LM loss, bf16 storage of frozen weights,
and the thin `Trainer` subclass that uses them."""
