"""The memory plan of one of our `.pt2` files, read from the generated wrapper in the package: at
a given number of atoms and edges, the size of each pool the call allocates, the peak of the
bytes live in it (from each buffer's allocation to its last use), and the largest buffers live
at that peak with the kernel or ATen call that writes them.

    .venv/bin/python benchmarks/dev/pool_buffers.py model.nequip.pt2 --atoms 4096 --edges 188396

With Inductor's memory planning (compile/aotinductor.py::INDUCTOR_CONFIGS) a call allocates its
intermediate buffers as slices of one pool, laid out at compile time; the pool, not the live
peak, is what the call touches, so the two side by side say how much the layout adds. Reads the
wrapper's C++ (aoti_torch__alloc_from_pool, aoti_torch_empty_strided), as torch 2.13 writes it.
"""

import argparse
import re
import sys
import zipfile

ITEMSIZE = dict(float16=2, bfloat16=2, float32=4, float64=8, int64=8, int32=4, uint8=1, bool=1)
ALLOC = re.compile(
    r"aoti_torch__alloc_from_pool\((pool\d+), (.*), cached_torch_dtype_(\w+), \d+, (int_array_\d+), "
    r"(int_array_\d+), &(tmp_tensor_handle_\d+)\)"
)
POOL = re.compile(r"aoti_torch_empty_strided\(\d+, (int_array_\d+), int_array_\d+, cached_torch_dtype_(\w+),.*&(pool\d+)_handle")
ARRAY = re.compile(r"\s*(?:static )?(?:constexpr )?(?:const )?int64_t (int_array_\d+)\[\] = \{(.*)\};")
HANDLE = re.compile(r"\s*auto (buf\d+) = RAIIAtenTensorHandle\((tmp_tensor_handle_\d+)\);")
ALIAS = re.compile(r"\s*auto (buf\d+) = (?:std::move\((buf\d+)\)|wrap_with_raii_handle_if_needed\(reinterpret_tensor_wrapper\((buf\d+),)")
SYMBOL = re.compile(r"\s*int64_t (s\d+) = (\w+)_size\[(\d)\];")
ALIAS_SYMBOL = re.compile(r"\s*int64_t (s\d+) = (s\d+);")
SHAPE_CHECK = re.compile(r"assert_size_stride\((\w+), \{([^}]*)\}")


def align(nbytes: int) -> int:
    return (nbytes + 63) // 64 * 64


def as_python(expression: str) -> str:
    expression = expression.replace("std::max<int64_t>({", "max(").replace("})", ")")
    expression = expression.replace("std::max(", "max(").replace("std::min(", "min(").replace("static_cast<int64_t>", "")
    return re.sub(r"(\d+)L\b", r"\1", expression)


def read_wrapper(path: str) -> list:
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.endswith(".wrapper.cpp") and "/aotinductor/model/" in n]
        if not names:
            sys.exit(f"{path}: no generated wrapper (data/aotinductor/model/*.wrapper.cpp) in the package")
        return archive.read(names[0]).decode().splitlines()


def symbol_values(lines: list, atoms: int, edges: int) -> dict:
    """The wrapper's size symbols: the one of edge_index's (2, E) is edges, the others atoms."""
    of_input, aliases = {}, {}
    for line in lines:
        if m := SYMBOL.match(line):
            of_input[m.group(1)] = m.group(2)
        elif m := ALIAS_SYMBOL.match(line):
            aliases[m.group(1)] = m.group(2)
    edge_symbols = set()
    for line in lines:
        if (m := SHAPE_CHECK.search(line)) and m.group(2).replace(" ", "").startswith("2L,"):
            edge_symbols.add(m.group(2).split(",")[1].strip())
    values = {s: (edges if s in edge_symbols else atoms) for s in of_input}
    values.update({s: values[t] for s, t in aliases.items() if t in values})
    return values


def plan(lines: list, values: dict):
    def evaluate(text):
        return eval(as_python(text), {"max": max, "min": min, "align": align}, values)  # noqa: S307 (our own package)

    arrays, pools, buffers, pending, root, last_use = {}, {}, {}, {}, {}, {}
    end = max(i for i, line in enumerate(lines) if re.search(r"\bpool\d+\.reset\(\)", line))
    for n, line in enumerate(lines):
        if m := ARRAY.match(line):
            arrays[m.group(1)] = evaluate("[" + m.group(2) + "]")
        elif m := POOL.search(line):
            pools[m.group(3)] = arrays[m.group(1)][0] * ITEMSIZE[m.group(2)]
        elif m := ALLOC.search(line):
            pool, offset, dtype, sizes, strides, handle = m.groups()
            sizes, strides = arrays.get(sizes, []), arrays.get(strides, [])
            span = sum((size - 1) * stride for size, stride in zip(sizes, strides)) + 1 if all(sizes) else 0
            pending[handle] = dict(pool=pool, offset=evaluate(offset), nbytes=span * ITEMSIZE[dtype], start=n)
        elif (m := HANDLE.match(line)) and m.group(2) in pending:
            buffers[m.group(1)] = pending.pop(m.group(2))
        elif m := ALIAS.match(line):
            source = m.group(2) or m.group(3)
            root[m.group(1)] = root.get(source, source)
        if n < end:
            for name in set(re.findall(r"\bbuf\d+\b", line)):
                last_use[root.get(name, name)] = n
    for name, buffer in buffers.items():
        buffer["end"] = last_use.get(name, buffer["start"])
        # the first call after the allocation that names the buffer: what writes it
        buffer["writer"] = next(
            (re.sub(r"^AOTI_TORCH_ERROR_CODE_CHECK\(", "", lines[i].strip()).split("(")[0]
             for i in range(buffer["start"] + 1, buffer["end"] + 1)
             if re.search(rf"\b{name}\b", lines[i]) and "RAIIAtenTensorHandle" not in lines[i] and "reinterpret" not in lines[i].split("(")[0]),
            "",
        )
    return pools, buffers


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pt2")
    parser.add_argument("--atoms", type=int, required=True)
    parser.add_argument("--edges", type=int, required=True)
    parser.add_argument("--top", type=int, default=12, help="buffers to list at the largest pool's peak")
    args = parser.parse_args(argv)
    lines = read_wrapper(args.pt2)
    pools, buffers = plan(lines, symbol_values(lines, args.atoms, args.edges))
    mib = 2.0**20
    for pool, size in sorted(pools.items(), key=lambda item: -item[1]):
        members = [b for b in buffers.values() if b["pool"] == pool]
        events = sorted([(b["start"], b["nbytes"]) for b in members] + [(b["end"] + 0.5, -b["nbytes"]) for b in members])
        live = peak = 0
        peak_at = 0.0
        for at, change in events:
            live += change
            if live > peak:
                peak, peak_at = live, at
        print(f"{pool}: {size / mib:.1f} MiB laid out, {len(members)} buffers, peak live {peak / mib:.1f} MiB "
              f"(wrapper line {int(peak_at) + 1})")
        if pool == max(pools, key=pools.get):
            at_peak = sorted((b for b in members if b["start"] <= peak_at <= b["end"]), key=lambda b: -b["nbytes"])
            for b in at_peak[: args.top]:
                print(f"  {b['nbytes'] / mib:8.1f} MiB {b['nbytes'] / args.edges:7.0f} B/edge  lines {b['start'] + 1}-{b['end'] + 1}  "
                      f"{b['writer'][:100]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
