#!/usr/bin/env python3
"""Check a longnet token store against its tokenizer and the text it was made from.

    check_store.py STORE TOKENIZER SOURCE [--suffix .rst.txt] [--text-field text]

Reads STORE (an HDF5 file written by `longnet prepare`) with h5py and checks, independently of
the C++ code that wrote it:

  * the layout: /tokens 1-D uint16 (vocabulary <= 65536) or uint32, /doc_offsets 1-D uint64 with
    documents + 1 entries from 0 to len(/tokens), non-decreasing; chunks of at most 1 MiB; no
    compression; doc2text stores also /target_tokens and /target_offsets;
  * the attributes: format_version 1, vocab_size and eos_id equal to the tokenizer's, tokenizer_sha256
    equal to the SHA-256 of the TOKENIZER file, num_documents, num_tokens, and tokens_sha256 equal
    to the SHA-256 of the stored little-endian token bytes;
  * every document ends with EOS and every id is inside the vocabulary;
  * language-model stores: every document, decoded with Python's sentencepiece, equals a source
    document byte for byte, in source order (a validation store holds the others). SOURCE is a
    folder (read recursively, files sorted by path, like `longnet prepare`), a text file, or a
    JSONL file (one document per line).

The comparison is exact because models trained by `longnet tokenizer train` use SentencePiece's
identity normalisation, keep all whitespace and add no space in front of a text: decoding gives
back the very bytes that were encoded. (The one exception is the character U+2581, which
SentencePiece uses as its space marker and decodes as a space; a document containing it is
reported as a mismatch.)

Needs h5py, numpy and sentencepiece (pip install h5py sentencepiece). Exits with status 0 when
every check passes, 1 otherwise.
"""
import argparse
import hashlib
import json
import os
import sys

try:
    import h5py
    import numpy as np
    import sentencepiece as spm
except ImportError as e:  # pragma: no cover - environment problem
    sys.exit(f"check_store: {e}; install with: pip install h5py numpy sentencepiece")

MAX_CHUNK_BYTES = 1 << 20
FORMAT_VERSION = 1


class CheckFailed(Exception):
    pass


def require(cond, message):
    if not cond:
        raise CheckFailed(message)


def source_documents(source, suffixes, text_field):
    """Non-blank documents of SOURCE in the order `longnet prepare` reads them."""
    if os.path.isdir(source):
        files = []
        for root, _, names in os.walk(source, followlinks=True):
            for name in names:
                path = os.path.join(root, name)
                if os.path.isfile(path) and (not suffixes or any(path.endswith(s) for s in suffixes)):
                    files.append(path)
        # Byte order of the UTF-8 paths, as the C++ reader sorts them.
        files.sort(key=lambda p: p.encode("utf-8", "surrogateescape"))
    else:
        files = [source]
    for path in files:
        with open(path, "rb") as f:
            data = f.read()
        if path.endswith(".jsonl"):
            for line in data.split(b"\n"):
                if not line.strip():
                    continue
                try:
                    text = json.loads(line.decode("utf-8"))[text_field]
                except (UnicodeDecodeError, ValueError, KeyError, TypeError):
                    continue  # prepare stops or skips here; such a line holds no document
                if text.strip():
                    yield path, text
        else:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                continue
            if text.strip():
                yield path, text


def first_difference(a, b):
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def check_layout(f, sp, model_bytes):
    vocab = sp.get_piece_size()
    for name in ("tokens", "doc_offsets"):
        require(name in f, f"dataset /{name} is missing")
    tokens, offsets = f["tokens"], f["doc_offsets"]
    expected_dtype = np.uint16 if vocab <= 65536 else np.uint32
    require(tokens.ndim == 1 and tokens.dtype == expected_dtype,
            f"/tokens is {tokens.dtype} with {tokens.ndim} dims; expected 1-D {np.dtype(expected_dtype)}")
    require(offsets.ndim == 1 and offsets.dtype == np.uint64, f"/doc_offsets is {offsets.dtype}, expected uint64")
    datasets = [tokens, offsets]
    if f.attrs.get("task") == "doc2text":
        for name in ("target_tokens", "target_offsets"):
            require(name in f, f"doc2text store without /{name}")
        datasets += [f["target_tokens"], f["target_offsets"]]
    for ds in datasets:
        require(ds.compression is None, f"{ds.name} is compressed ({ds.compression})")
        if ds.chunks is not None:
            chunk_bytes = int(np.prod(ds.chunks)) * ds.dtype.itemsize
            require(chunk_bytes <= MAX_CHUNK_BYTES, f"{ds.name} chunks of {chunk_bytes} bytes exceed 1 MiB")

    attrs = f.attrs
    for key in ("format_version", "vocab_size", "eos_id", "tokenizer_sha256", "tokens_sha256",
                "num_documents", "num_tokens", "task", "split"):
        require(key in attrs, f"attribute {key} is missing")
    require(int(attrs["format_version"]) == FORMAT_VERSION, f"format_version {attrs['format_version']}")
    require(int(attrs["vocab_size"]) == vocab, f"vocab_size {attrs['vocab_size']} but the tokenizer has {vocab}")
    require(int(attrs["eos_id"]) == sp.eos_id(), f"eos_id {attrs['eos_id']} but the tokenizer's is {sp.eos_id()}")
    model_hash = hashlib.sha256(model_bytes).hexdigest()
    require(attrs["tokenizer_sha256"] == model_hash,
            f"tokenizer_sha256 {attrs['tokenizer_sha256']} but the tokenizer file hashes to {model_hash}")

    tok = tokens[:]
    off = offsets[:]
    require(len(off) == int(attrs["num_documents"]) + 1, "doc_offsets length does not match num_documents")
    require(len(tok) == int(attrs["num_tokens"]), "num_tokens does not match /tokens")
    require(len(off) >= 1 and off[0] == 0 and off[-1] == len(tok), "doc_offsets do not span /tokens")
    require(bool(np.all(np.diff(off.astype(np.int64)) >= 0)), "doc_offsets decrease")
    require(bool(np.all(tok < vocab)), "a token id is outside the vocabulary")
    digest = hashlib.sha256(tok.astype(tok.dtype.newbyteorder("<")).tobytes()).hexdigest()
    require(attrs["tokens_sha256"] == digest, f"tokens_sha256 {attrs['tokens_sha256']} but the tokens hash to {digest}")
    eos = int(attrs["eos_id"])
    ends = off[1:] - 1
    require(bool(np.all(off[1:] > off[:-1])) and bool(np.all(tok[ends.astype(np.int64)] == eos)),
            "a document does not end with EOS")
    return tok, off


def check(args):
    with open(args.tokenizer, "rb") as m:
        model_bytes = m.read()
    sp = spm.SentencePieceProcessor(model_proto=model_bytes)
    with h5py.File(args.store, "r") as f:
        tok, off = check_layout(f, sp, model_bytes)
        task = f.attrs["task"]
        print(f"layout and attributes: ok ({len(off) - 1} documents, {len(tok)} tokens, {tok.dtype}, task {task})")
        if task != "lm":
            print("documents not compared with the source (doc2text stores hold bodies and titles)")
            return
    sources = source_documents(args.source, args.suffix, args.text_field)
    skipped = 0
    for d in range(len(off) - 1):
        text = sp.decode(tok[off[d]:off[d + 1] - 1].tolist())
        passed = []  # source documents stepped over for this one: the other split's
        for path, source_text in sources:
            if source_text == text:
                break
            passed.append((path, source_text))
        else:
            # No match: point at the source document that agrees with it longest.
            if not passed:
                raise CheckFailed(f"document {d} ({text[:60]!r}...) is left over after the last source document")
            path, near = max(passed, key=lambda p: first_difference(p[1], text))
            at = first_difference(near, text)
            raise CheckFailed(f"document {d} matches no source document in order; closest is {path}, "
                              f"differing at character {at}: source {near[at:at + 40]!r}, "
                              f"decoded {text[at:at + 40]!r}")
        skipped += len(passed)
    print(f"documents: all {len(off) - 1} decode to their source text exactly "
          f"({skipped} source documents stepped over: the other split's)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store", help="HDF5 token store (train.h5 or val.h5)")
    parser.add_argument("tokenizer", help="SentencePiece model the store was made with")
    parser.add_argument("source", help="folder, text file or JSONL file the store was made from")
    parser.add_argument("--suffix", action="append", default=None,
                        help="only files ending with this (repeatable); default: the store's own "
                             "suffix from its 'source' attribute, else all files")
    parser.add_argument("--text-field", default="text", help="JSONL field holding the text")
    args = parser.parse_args()
    if args.suffix is None:
        with h5py.File(args.store, "r") as f:
            recorded = str(f.attrs.get("source", ""))
        args.suffix = [w[1:] for w in recorded.split() if w.startswith("*")]
    try:
        check(args)
    except CheckFailed as e:
        print(f"check_store: FAILED: {e}", file=sys.stderr)
        return 1
    except (OSError, KeyError) as e:
        print(f"check_store: FAILED: cannot read the inputs: {e}", file=sys.stderr)
        return 1
    print("check_store: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
