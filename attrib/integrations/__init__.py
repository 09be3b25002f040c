"""attrib inside other people's training loops (the Hugging Face Trainer and TRL's SFTTrainer)."""
