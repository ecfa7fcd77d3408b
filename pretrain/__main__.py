"""`python -m pretrain <hydra overrides>` (also under torchrun or srun)."""

from pretrain.train import main

if __name__ == "__main__":
    main()
