r"""Paper A's synthetic images (Farhat & Chen, arXiv 2404.03263) for a data-limited task.

  python -m kdjax.generate --config=configs/synth/paper_a.py:task=dtd,multiple=1 \
      --workdir=synth/dtd_1x
  python -m kdjax.main --config=configs/paper_a.py:data=dtd,arm=distill --workdir=runs/dtd_syn \
      --config.data.synthetic=synth/dtd_1x

  task      dtd | caltech101 | mit_indoor67 | cifar100 (the paper's prompts below)
  multiple  x the real training count of each class (the paper: 1 or 2); the real selection is
            configs/paper_a.py's (Caltech-101: 80% of train+test per class, seed 0)
  steps, guidance, scheduler, seed: sampling (default DPM-Solver++ 25 steps, guidance 7.5)

Stable Diffusion v1.4 (CompVis/stable-diffusion-v1-4, its bf16 Flax weights; accept the licence
on the Hub and `hf auth login` once), 512 px, stored at the size the trainer loads
(configs/paper_a.py resizes every image to 256; CIFAR-100 keeps 32). Prompts: "{c} texture"
(DTD), "a picture of a {c}" (Caltech-101, CIFAR-100), "the inside of a {c}" (MIT Indoor-67),
with the real dataset's own class names (the reference code's Caltech-101 run used CIFAR-100's
names by mistake). Our additions, not the paper's: run-together or plural label names get
readable prompt words (`rename` below). Caltech-101 has the reference's 101 classes: TFDS's
`background_google` is left out of real and synthetic data alike
(data.exclude_classes). The paper used the pipeline's default sampler (PNDM,
50 steps) in fp16: `--config.synth.scheduler=pndm --config.synth.num_inference_steps=50`.

Cost (DTD 1x = 1,880 images): 25 steps x 2 (guidance) UNet passes at 64x64 latents + one VAE
decode per image; see BENCHMARKS.md for measured throughput.
"""

import os

from kdjax import configlib

# task -> (templates, stored size, {label name: prompt words}, excluded label names)
TASKS = {
    "dtd": (("{c} texture",), 256, {}, ()),
    "caltech101": (("a picture of a {c}",), 256, {
        "faces": "face", "faces_easy": "face", "leopards": "leopard", "motorbikes": "motorbike",
        "airplanes": "airplane", "water_lilly": "water lily", "car_side": "car, side view"},
        ()),  # background_google: not a class (data.exclude_classes of configs/paper_a.py)
    "mit_indoor67": (("the inside of a {c}",), 256, {
        "airport_inside": "airport", "artstudio": "art studio", "church_inside": "church",
        "clothingstore": "clothing store", "computerroom": "computer room",
        "dentaloffice": "dental office", "fastfood_restaurant": "fast food restaurant",
        "gameroom": "game room", "grocerystore": "grocery store", "hairsalon": "hair salon",
        "hospitalroom": "hospital room", "inside_bus": "bus", "inside_subway": "subway car",
        "jewelleryshop": "jewellery shop", "kindergarden": "kindergarten",
        "laboratorywet": "wet laboratory", "livingroom": "living room",
        "movietheater": "movie theater", "poolinside": "indoor swimming pool",
        "prisoncell": "prison cell", "shoeshop": "shoe shop", "stairscase": "staircase",
        "studiomusic": "music studio", "toystore": "toy store", "trainstation": "train station",
        "videostore": "video store", "waitingroom": "waiting room", "winecellar": "wine cellar"},
        ()),
    "cifar100": (("a picture of a {c}",), 32, {}, ()),
}


def _paper_a_data(task: str):
  """configs/paper_a.py's data section for `task`: the same real selection as training."""
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "paper_a.py")
  return configlib.load_file(path, "kdjax_configs_paper_a").get_config(f"data={task}").data


def get_config(arg=None):
  a = configlib.parse_arg(arg, task="dtd", multiple=1.0, steps=25, guidance=7.5,
                          scheduler="dpm_multistep", seed=0)
  if a.task not in TASKS:
    raise ValueError(f"unknown task {a.task!r}; valid: {sorted(TASKS)}")
  templates, size, rename, exclude = TASKS[a.task]
  c = configlib.generate_base()
  c.data = _paper_a_data(a.task)
  c.synth.templates = templates
  c.synth.image_size = size
  c.synth.rename = tuple(f"{k}={v}" for k, v in rename.items())
  c.synth.exclude_classes = exclude
  c.synth.multiple = a.multiple
  c.synth.num_inference_steps = a.steps
  c.synth.guidance_scale = a.guidance
  c.synth.scheduler = a.scheduler
  c.synth.seed = a.seed
  return c
