"""Precision: int8 with ONNX Runtime's quantization tools (int8), the space-to-depth int8 stem (stem), and the fp32/fp16/int8 variants of the pruned model with the choice of model.onnx (variants)."""
