"""The models: encoders, the fusion model, zero-shot, features, training, scoring, the registry,
explanations, trust (abstention, out-of-distribution, reasons) and the prediction engine."""
