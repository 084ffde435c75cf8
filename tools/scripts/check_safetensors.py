#!/usr/bin/env python3
"""Checks a safetensors file written by longnet with the reference `safetensors` package.

Loads every tensor through safetensors (with torch when it is installed, else numpy) and compares
the names, shapes and (when given) dtypes with an expected list:

  check_safetensors.py model.safetensors --expect '[["decoder.embed_tokens.weight", [96, 32]], ...]'
  check_safetensors.py model.safetensors --expect-file summary.json

The expected list is JSON in any of these forms:
  [[name, shape], ...]                         pairs
  [{"name": ..., "shape": [...], "dtype": "F32"}, ...]
  {name: shape, ...} or {name: {"shape": [...], "dtype": "F32"}, ...}
  {"tensors": <any of the above>}              (a summary file)

With --metadata KEY=VALUE (repeatable) the file's __metadata__ must hold those entries
({"format": "pt"} is always required). Exit status 0 when everything matches, 1 with a list of
differences otherwise, 2 when the file cannot be read.
"""
import argparse
import json
import sys

# safetensors dtype names of the framework's dtypes, by the name numpy or torch gives them.
_NUMPY_TO_SAFETENSORS = {
    "float32": "F32", "float64": "F64", "float16": "F16", "int32": "I32", "int64": "I64",
    "uint8": "U8", "bool": "BOOL",
}
_TORCH_TO_SAFETENSORS = {
    "torch.float32": "F32", "torch.float64": "F64", "torch.float16": "F16", "torch.bfloat16": "BF16",
    "torch.int32": "I32", "torch.int64": "I64", "torch.uint8": "U8", "torch.bool": "BOOL",
}


def parse_expected(spec):
    """Normalises any accepted form to {name: (shape list, dtype or None)}."""
    if isinstance(spec, dict) and "tensors" in spec and len(spec) == 1:
        spec = spec["tensors"]
    out = {}
    if isinstance(spec, dict):
        items = spec.items()
    elif isinstance(spec, list):
        items = []
        for entry in spec:
            if isinstance(entry, dict):
                items.append((entry["name"], entry))
            elif isinstance(entry, list) and len(entry) == 2:
                items.append((entry[0], entry[1]))
            else:
                raise ValueError(f"expected entry {entry!r} is neither [name, shape] nor an object")
    else:
        raise ValueError("the expected list must be a JSON list or object")
    for name, value in items:
        if isinstance(value, dict):
            out[name] = (list(value["shape"]), value.get("dtype"))
        else:
            out[name] = (list(value), None)
    return out


def load(path):
    """{name: (shape list, safetensors dtype name)} and the metadata, read through safetensors."""
    try:
        import torch  # noqa: F401  (bf16 needs torch; numpy has no bfloat16)
        framework, names = "pt", _TORCH_TO_SAFETENSORS
    except ImportError:
        framework, names = "numpy", _NUMPY_TO_SAFETENSORS
    from safetensors import safe_open

    tensors = {}
    with safe_open(path, framework=framework) as f:
        metadata = f.metadata() or {}
        for name in f.keys():
            t = f.get_tensor(name)  # reads the data: a damaged file fails here
            tensors[name] = (list(t.shape), names.get(str(t.dtype), str(t.dtype)))
    return tensors, metadata, framework


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("file", help="the .safetensors file")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--expect", help="expected names and shapes as JSON text")
    g.add_argument("--expect-file", help="a JSON file with the expected names and shapes")
    p.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE",
                   help="a required __metadata__ entry (repeatable)")
    args = p.parse_args(argv)

    expected = parse_expected(json.loads(args.expect) if args.expect else json.load(open(args.expect_file)))
    try:
        got, metadata, framework = load(args.file)
    except Exception as e:  # noqa: BLE001  (any reader error means the file is unreadable)
        print(f"{args.file}: cannot be read by safetensors: {e}", file=sys.stderr)
        return 2

    problems = []
    for name in sorted(set(expected) - set(got)):
        problems.append(f"missing tensor {name}")
    for name in sorted(set(got) - set(expected)):
        problems.append(f"unexpected tensor {name} {got[name][0]}")
    for name in sorted(set(got) & set(expected)):
        (want_shape, want_dtype), (shape, dtype) = expected[name], got[name]
        if shape != want_shape:
            problems.append(f"{name}: shape {shape}, expected {want_shape}")
        if want_dtype is not None and dtype != want_dtype:
            problems.append(f"{name}: dtype {dtype}, expected {want_dtype}")
    required = {"format": "pt"}
    for item in args.metadata:
        key, _, value = item.partition("=")
        required[key] = value
    for key, value in required.items():
        if metadata.get(key) != value:
            problems.append(f"__metadata__[{key!r}] is {metadata.get(key)!r}, expected {value!r}")

    if problems:
        print(f"{args.file}: {len(problems)} difference(s):")
        for line in problems:
            print("  " + line)
        return 1
    print(f"{args.file}: {len(got)} tensors match (read with safetensors, framework {framework})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
