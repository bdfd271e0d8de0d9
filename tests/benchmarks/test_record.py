"""benchmarks/record.py: what every benchmark records of the machine it ran on."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import record


def test_the_processor_is_named_with_its_native_bfloat16_units(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx512f "
                       "avx512_bf16 sse\n\nprocessor\t: 1\nmodel name\t: other\n")  # fmt: skip
    assert record.cpu(cpuinfo) == {"model": "AMD EPYC", "bf16_units": ["avx512_bf16"]}
    cpuinfo.unlink()  # unreadable: the platform's name, no units
    assert record.cpu(cpuinfo)["bf16_units"] == []
    assert record.machine(threads=2)["threads"] == 2
