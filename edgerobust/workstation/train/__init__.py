"""Training: fine-tuning loops, standard, PGD-AT or TRADES (finetune), and the reference zoo's training (zoo)."""
