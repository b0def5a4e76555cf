"""What torch runs on: the torch device, auto, cpu or cuda (torch_device), and the guard on memory for the steps that can eat the machine (memguard)."""
