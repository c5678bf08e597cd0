"""Accelerator descriptions shipped with embedcsp (installed as `embedcsp.isa`)."""
