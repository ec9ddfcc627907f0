"""Small GGUF files written for tests (no weights: zero tensors of the right shapes and types)."""


def write_llama_gguf(path, *, blocks: int, d: int, kv_dim: int, ff: int, vocab: int, ctx: int,
                     output: bool) -> None:
    """Write a tiny llama-architecture GGUF (4 heads, 2 KV heads): F16 matrices, F32 norms, zero data.
    `output=False` leaves out output.weight (tied embeddings)."""
    import gguf
    import numpy as np
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(blocks)
    w.add_embedding_length(d)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_feed_forward_length(ff)
    w.add_context_length(ctx)
    w.add_vocab_size(vocab)
    shapes = {"token_embd.weight": (vocab, d)}
    if output:
        shapes["output.weight"] = (vocab, d)
    for i in range(blocks):
        shapes.update({f"blk.{i}.attn_q.weight": (d, d), f"blk.{i}.attn_k.weight": (kv_dim, d),
                       f"blk.{i}.attn_v.weight": (kv_dim, d), f"blk.{i}.attn_output.weight": (d, d),
                       f"blk.{i}.ffn_up.weight": (ff, d), f"blk.{i}.ffn_gate.weight": (ff, d),
                       f"blk.{i}.ffn_down.weight": (d, ff)})
    for name, shape in shapes.items():
        w.add_tensor(name, np.zeros(shape, dtype=np.float16))
    for i in range(blocks):
        for n in ("attn_norm", "ffn_norm"):
            w.add_tensor(f"blk.{i}.{n}.weight", np.zeros(d, dtype=np.float32))
    w.add_tensor("output_norm.weight", np.zeros(d, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
