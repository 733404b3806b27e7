"""Alignment pieces shared by the RLHF stages (rm, ppo, dpo, grpo) and the `lmadapt rank` command.

Reward sources (rewards.py), ranking data (rank.py), and the pieces of the policy-optimisation stages that
live beside them (policy, PPO math, loop checkpoints, TRL bridge, curves). Sits at the stages layer.
"""
