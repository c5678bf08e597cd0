"""The Gemmini family's ISA layer (docs/gemmini.md): its configuration, command records and
their encoding, an independent decoder, and a bit-exact functional model.

The compiler seam that plans and emits Gemmini programs lives elsewhere; this
package only knows the ISA.
"""

from embedcsp.targets.gemmini.commands import (
    GARBAGE,
    OS,
    WS,
    Command,
    ComputeAccumulated,
    ComputePreloaded,
    ConfigEx,
    ConfigLd,
    ConfigSt,
    Flush,
    Mvin,
    Mvout,
    Preload,
    encode,
    encode_program,
    epilogue_readout,
    f32_bits,
    local_addr,
)
from embedcsp.targets.gemmini.config import (
    GemminiConfig,
    gemmini_config_from_dict,
    gemmini_config_from_toml,
    load_gemmini_config,
)
from embedcsp.targets.gemmini.decode import decode_program
from embedcsp.targets.gemmini.model import Counters, run, run_program

__all__ = [
    "GARBAGE", "OS", "WS", "Command", "ComputeAccumulated", "ComputePreloaded", "ConfigEx",
    "ConfigLd", "ConfigSt", "Counters", "Flush", "GemminiConfig", "Mvin", "Mvout", "Preload",
    "decode_program", "encode", "encode_program", "epilogue_readout", "f32_bits",
    "gemmini_config_from_dict", "gemmini_config_from_toml", "load_gemmini_config", "local_addr",
    "run", "run_program",
]
