"""Non-neural baselines that write the same run folder as the neural stages."""
