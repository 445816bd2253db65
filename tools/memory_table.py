"""Turns the JSON reports of tools/memory-table.sh (one `kiln bench sd` run per weight type and
mode) and its `--plan` outputs into the Markdown tables of docs/MEMORY.md. Standard library only.

    python3 tools/memory_table.py OUT_DIR > table.md
"""

import json
import re
import sys
from pathlib import Path

MIB = 1024 * 1024


def mib(b: int) -> str:
    return f"{b / MIB:,.0f} MiB"


def mode(r: dict) -> str:
    parts = []
    tile = r.get("vae_tiling")
    parts.append(f"VAE tiles {tile}" if tile else "VAE whole")
    if r.get("max_vram_bytes"):
        parts.insert(0, f"--max-vram {r['max_vram_bytes'] / MIB:,.0f}M")
    if r.get("unet_streamed"):
        parts.append("UNet streamed by layer")
    return ", ".join(parts)


def measured(out: Path) -> str:
    rows = [
        "| weight type | mode | weights | peak | peak (GB) | mean UNet step | VAE decode |",
        "|---|---|---|---|---|---|---|",
    ]
    for path in sorted(out.glob("*.json")):
        r = json.loads(path.read_text())
        rows.append(
            f"| {r['weight_type']} | {mode(r)} | {mib(r['weight_bytes'])} | "
            f"{mib(r['peak_memory_bytes'])} | {r['peak_memory_bytes'] / 1e9:.2f} | "
            f"{r['mean_step_ms'] / 1e3:.1f} s | {r['vae_decode_ms'] / 1e3:.1f} s |"
        )
    return "\n".join(rows)


def planned(out: Path) -> str:
    rows = [
        "| run | weights on the GPU | peak, resident | reserved, no budget | peak, UNet streamed |",
        "|---|---|---|---|---|",
    ]
    for path in sorted(out.glob("plan-*.txt")):
        text = path.read_text()
        total = re.search(r"^\s+total\s+(.+)$", text, re.M)
        peak = re.search(
            r"peak device memory: (.+?) resident \((.+?) reserved with no budget\), (.+) with the UNet streamed",
            text,
        )
        if not (total and peak):
            continue
        rows.append(
            f"| {path.stem[len('plan-'):]} | {total.group(1).strip()} | {peak.group(1)} | "
            f"{peak.group(2)} | {peak.group(3)} |"
        )
    return "\n".join(rows)


def main() -> None:
    out = Path(sys.argv[1])
    print(measured(out))
    print()
    print(planned(out))


if __name__ == "__main__":
    main()
