"""Build the tiny random Janus-Pro model and what transformers computes for it.

Run outside CI, in a throwaway venv with torch, transformers (5.x, which has
`JanusForConditionalGeneration`), pillow, matplotlib and tokenizers:

    python make_janus_fixture.py OUT_DIR

OUT_DIR/tiny/ holds the model in transformers' layout (config.json,
model.safetensors, a small byte-level BPE tokenizer.json with Janus's special
tokens, preprocessor_config.json with Janus-Pro's values); OUT_DIR/expected/
holds the reference outputs, float32 on CPU, one thread, eager attention:

- image.png / image.jpg: a real photograph (matplotlib's sample
  grace_hopper.jpg, resized to 300x225 so the processor pads it) and its
  PNG; pixel_values_{png,jpg}.npy: JanusImageProcessorPil's output [3,384,384];
- vision.npy: the vision encoder's last hidden state (after post_layernorm)
  [576, hidden]; aligned.npy: the aligner's output [576, text hidden];
- text_logits.npy: teacher-forced logits of `text_ids` [n, vocab];
  image_logits.npy: of `image_ids` with the image's embeddings at the image
  token's positions [n, vocab];
- gen_logits.npy: the guided image-token logits at each of the 576 steps
  (cond and uncond rows as one batch of 2, CFG scale 5, greedy) [576, codes];
  gen_codes: the greedy codes (also checked against `model.generate`);
- decoded.npy: `decode_image_tokens(decode_codes)` [384, 384, 3] (seeded
  random codes), and
  decoded_u8.npy: the processor's postprocess of it (uint8 pixels).
"""

import json
import os
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import JanusConfig, JanusForConditionalGeneration
from transformers.models.janus.image_processing_pil_janus import JanusImageProcessorPil

torch.manual_seed(0)
torch.set_num_threads(1)
out = sys.argv[1]
tiny = os.path.join(out, "tiny")
exp = os.path.join(out, "expected")
os.makedirs(tiny, exist_ok=True)
os.makedirs(exp, exist_ok=True)

# --- tokenizer: byte-level BPE with Janus's special tokens -------------------
specials = [
    "<｜begin▁of▁sentence｜>",
    "<｜end▁of▁sentence｜>",
    "<｜▁pad▁｜>",
    "<image_placeholder>",
    "<begin_of_image>",
    "<end_of_image>",
    "<|User|>",
    "<|Assistant|>",
]
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
corpus = [
    "A whale swims in a lake under the moon.",
    "Describe this image in detail. What is in the picture?",
    "a photo of a woman in a uniform, black and white, portrait",
    "The quick brown fox jumps over the lazy dog. 0123456789",
] * 20
trainer = trainers.BpeTrainer(
    vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
)
tok.train_from_iterator(corpus, trainer)
tok.save(os.path.join(tiny, "tokenizer.json"))
ids = {s: tok.token_to_id(s) for s in specials}
bos, eos, pad = ids[specials[0]], ids[specials[1]], ids[specials[2]]
img_tok, boi, eoi = ids["<image_placeholder>"], ids["<begin_of_image>"], ids["<end_of_image>"]
vocab = tok.get_vocab_size()
chat_template = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}<|User|>: {{ m['content'] }}\n\n"
    "{% else %}<|Assistant|>:{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|Assistant|>:{% endif %}"
)
json.dump(
    {
        "bos_token": specials[0],
        "eos_token": specials[1],
        "pad_token": specials[2],
        "chat_template": chat_template,
    },
    open(os.path.join(tiny, "tokenizer_config.json"), "w"),
    indent=1,
)

# --- model --------------------------------------------------------------------
cfg = JanusConfig(
    text_config=dict(
        model_type="llama",
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
        tie_word_embeddings=False,
    ),
    vision_config=dict(
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=384,
        patch_size=16,
        mlp_ratio=2.0,
        projection_dim=64,
        depth=2,
        num_image_tokens=576,
        hidden_act="gelu",
    ),
    vq_config=dict(
        embed_dim=8,
        num_embeddings=256,
        latent_channels=32,
        base_channels=32,
        channel_multiplier=[1, 1, 1, 1, 2],
        num_res_blocks=1,
        projection_dim=64,
        image_token_embed_dim=64,
        num_hidden_layers=2,
        hidden_act="gelu",
    ),
    image_token_id=img_tok,
    tie_word_embeddings=False,
)
cfg._attn_implementation = "eager"
model = JanusForConditionalGeneration(cfg).eval()
# Random init leaves some modules at exactly 0/1 (norms, biases): jitter every
# parameter so each weight matters for the comparison.
with torch.no_grad():
    for name, p in model.named_parameters():
        p.add_(torch.randn_like(p) * (0.02 if p.dim() > 1 else 0.1))
state = {k: v.contiguous() for k, v in model.state_dict().items()}
save_file(state, os.path.join(tiny, "model.safetensors"), metadata={"format": "pt"})
conf = cfg.to_dict()
conf["architectures"] = ["JanusForConditionalGeneration"]
json.dump(conf, open(os.path.join(tiny, "config.json"), "w"), indent=1)
json.dump(
    {
        "image_processor_type": "JanusImageProcessor",
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "min_size": 14,
        "resample": 3,
        "rescale_factor": 1 / 255,
        "size": {"height": 384, "width": 384},
        "do_pad": True,
    },
    open(os.path.join(tiny, "preprocessor_config.json"), "w"),
    indent=1,
)

# --- image preprocessing --------------------------------------------------------
import matplotlib.cbook as cbook

photo = Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB").resize((300, 225), Image.BICUBIC)
photo.save(os.path.join(exp, "image.png"))
photo.save(os.path.join(exp, "image.jpg"), quality=90)
proc = JanusImageProcessorPil(image_mean=[0.5] * 3, image_std=[0.5] * 3)
for ext in ["png", "jpg"]:
    img = Image.open(os.path.join(exp, f"image.{ext}")).convert("RGB")
    pv = proc(img, return_tensors="np")["pixel_values"][0].astype(np.float32)
    np.save(os.path.join(exp, f"pixel_values_{ext}.npy"), pv)
pixel_values = torch.from_numpy(np.load(os.path.join(exp, "pixel_values_png.npy")))[None]

# --- understanding ---------------------------------------------------------------
with torch.no_grad():
    vis = model.model.vision_model(pixel_values).last_hidden_state[0]
    aligned = model.model.aligner(vis[None])[0]
np.save(os.path.join(exp, "vision.npy"), vis.numpy())
np.save(os.path.join(exp, "aligned.npy"), aligned.numpy())

text_ids = [bos] + tok.encode("Describe this image in detail.").ids
image_ids = (
    [bos]
    + tok.encode("<|User|>: ").ids
    + [boi]
    + [img_tok] * 576
    + [eoi]
    + tok.encode("\nWhat is in the picture?\n\n<|Assistant|>:").ids
)
with torch.no_grad():
    tl = model(input_ids=torch.tensor([text_ids])).logits[0]
    il = model(input_ids=torch.tensor([image_ids]), pixel_values=pixel_values).logits[0]
np.save(os.path.join(exp, "text_logits.npy"), tl.numpy())
np.save(os.path.join(exp, "image_logits.npy"), il.numpy())

# --- generation: CFG 5, greedy, cond and uncond as one batch of 2 --------------------
gen_prompt = [bos] + tok.encode("<|User|>: A whale swims in a lake\n\n<|Assistant|>:").ids + [boi]
uncond = [t if t in (bos, boi) else pad for t in gen_prompt]
scale = 5.0
lm = model.model.language_model
with torch.no_grad():
    emb = lm.embed_tokens(torch.tensor([gen_prompt, uncond]))
    o = lm(inputs_embeds=emb, use_cache=True)
    cache = o.past_key_values if hasattr(o, "past_key_values") else o.cache
    codes, steps = [], []
    h = o.last_hidden_state[:, -1]
    for i in range(576):
        s = model.model.generation_head(h)
        g = s[1] + (s[0] - s[1]) * scale
        steps.append(g.numpy())
        c = int(torch.argmax(g))
        codes.append(c)
        e = model.prepare_embeddings_for_image_generation(torch.tensor([[c], [c]]))
        o = lm(inputs_embeds=e, past_key_values=cache, use_cache=True)
        cache = o.past_key_values if hasattr(o, "past_key_values") else o.cache
        h = o.last_hidden_state[:, -1]
np.save(os.path.join(exp, "gen_logits.npy"), np.stack(steps).astype(np.float32))

# The same codes from transformers' own generate().
model.generation_config.bos_token_id = bos
model.generation_config.pad_token_id = pad
model.generation_config.generation_kwargs = {"boi_token_id": boi}
with torch.no_grad():
    ref = model.generate(
        torch.tensor([gen_prompt]),
        attention_mask=torch.ones(1, len(gen_prompt), dtype=torch.long),
        generation_mode="image",
        do_sample=False,
        guidance_scale=scale,
    )
assert ref[0].tolist() == codes, "the hand loop and generate() disagree"

# The VQ decoder on given codes: random ones, so every code position matters.
rand_codes = torch.randint(0, cfg.vq_config.num_embeddings, (576,), generator=torch.Generator().manual_seed(1)).tolist()
with torch.no_grad():
    dec = model.decode_image_tokens(torch.tensor([rand_codes]))[0]
np.save(os.path.join(exp, "decoded.npy"), dec.numpy().astype(np.float32))
u8 = proc.postprocess([dec.permute(2, 0, 1)], return_tensors="np")["pixel_values"][0]
np.save(os.path.join(exp, "decoded_u8.npy"), np.asarray(u8).astype(np.uint8))

json.dump(
    {
        "transformers": __import__("transformers").__version__,
        "torch": torch.__version__,
        "special_ids": {"bos": bos, "eos": eos, "pad": pad, "image": img_tok, "boi": boi, "eoi": eoi},
        "text_ids": text_ids,
        "image_ids": image_ids,
        "gen_prompt": gen_prompt,
        "gen_uncond": uncond,
        "cfg": scale,
        "gen_codes": codes,
        "decode_codes": rand_codes,
    },
    open(os.path.join(exp, "expected.json"), "w"),
    indent=1,
)
print("ok", vocab, len(image_ids), codes[:8])
