"""Small GGUF files written for tests (no weights: zero tensors of the right shapes and types)."""


def write_llama_gguf(path, *, blocks: int, d: int, kv_dim: int, ff: int, vocab: int, ctx: int,
                     output: bool, loadable: bool = False) -> None:
    """Write a tiny llama-architecture GGUF (4 heads, 2 KV heads): F16 matrices, F32 norms, zero data.
    `output=False` leaves out output.weight (tied embeddings). `loadable=True` adds what llama.cpp needs to load
    and serve it (RMS-norm epsilon, RoPE size and a byte-level SentencePiece vocabulary: vocab must be 259)."""
    import gguf
    import numpy as np
    w = gguf.GGUFWriter(str(path), "llama")
    if loadable:
        if vocab != 3 + 256:
            raise ValueError("a loadable tiny GGUF has 259 tokens: <unk>, <s>, </s> and the 256 byte tokens")
        w.add_layer_norm_rms_eps(1e-5)
        w.add_rope_dimension_count(d // 4)
        w.add_tokenizer_model("llama")
        w.add_token_list(["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)])
        w.add_token_scores([0.0] * vocab)
        w.add_token_types([2, 3, 3] + [6] * 256)     # unknown, control, control, byte
        w.add_unk_token_id(0)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
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
