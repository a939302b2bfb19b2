"""The choices and default of the attention export form, declared once for exporter.attention_forms (the graph
passes) and `eca-deploy export` (its option). Kept free of onnx so that `--help` imports nothing heavy."""

FORMS = ("nchwc", "lean")
# The export default stays lean until `calibrate` starts from to_lean(model): a Q/DQ model made from the nchwc
# graph quantizes the inserted convolutions (slower on the CPU, and it lost INT8 accuracy on the digits test).
DEFAULT_FORM = "lean"
