"""Configuration: per-layer settings, the quantizers' argument schemas, the plan and net-aware clipping."""
