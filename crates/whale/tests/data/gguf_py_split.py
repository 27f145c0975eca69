"""Split a GGUF into parts with gguf-py (llama.cpp's own Python GGUF package),
for whale's split-file tests: `python gguf_py_split.py IN.gguf OUT_PREFIX N`
writes OUT_PREFIX-0000k-of-0000M.gguf with at most N tensors a part."""
import sys

import gguf

src, out, per_part = sys.argv[1], sys.argv[2], int(sys.argv[3])
r = gguf.GGUFReader(src)
arch = r.fields["general.architecture"].contents()
w = gguf.GGUFWriter(out + ".gguf", arch, split_max_tensors=per_part)
for name, f in r.fields.items():
    if name.startswith("GGUF.") or name == "general.architecture":
        continue
    vtype = f.types[0]
    sub = f.types[1] if vtype == gguf.GGUFValueType.ARRAY else None
    w.add_key_value(name, f.contents(), vtype, sub_type=sub)
for t in r.tensors:
    # The data as stored (for a quantized type, rows of block bytes).
    w.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
