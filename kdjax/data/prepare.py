r"""The papers' datasets that are not in the TFDS catalog, written as local TFDS datasets
(array_record, no TensorFlow) by kdjax's folder writer (kdjax/data/folder.py: every image
decoded before anything is written, stored as RGB PNG).

  python -m kdjax.data.prepare mit_indoor67 SRC DATA_DIR [--overwrite]
  python -m kdjax.data.prepare fgvc_aircraft SRC DATA_DIR [--overwrite]

mit_indoor67   (paper A) SRC holds Images/<class>/*.jpg of indoorCVPR_09.tar and the official
               TrainImages.txt / TestImages.txt lists (web.mit.edu/torralba/www/indoor.html):
               67 classes, splits train (5,360) / test (1,340).
fgvc_aircraft  (paper B) SRC is the extracted fgvc-aircraft-2013b (data/images/*.jpg,
               data/variants.txt, data/images_variant_{trainval,test}.txt;
               www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/): variant level, 100 classes in
               variants.txt's order, splits trainval (6,667) / test (3,333), the images as
               they are (the copyright banner kept), as torchvision's FGVCAircraft, which the
               AFT reference reads (data.py:150-152).
"""

import os
import sys

from kdjax import errors
from kdjax.data import folder


def mit_indoor67(src: str, data_dir: str, overwrite: bool = False) -> str:
  """SRC/Images/<class>/*.jpg + SRC/{Train,Test}Images.txt -> `mit_indoor67`; its directory."""
  src = os.path.expanduser(src)
  images = os.path.join(src, "Images")
  if not os.path.isdir(images):
    raise errors.UserError(f"{src} has no Images/ folder: extract indoorCVPR_09.tar into it")
  classes = sorted(d for d in os.listdir(images) if os.path.isdir(os.path.join(images, d)))
  splits = {}
  for split, listing in (("train", "TrainImages.txt"), ("test", "TestImages.txt")):
    path = os.path.join(src, listing)
    if not os.path.isfile(path):
      raise errors.UserError(f"{path} is missing: download it from the dataset's page")
    with open(path) as f:
      splits[split] = [folder.Example(rel, os.path.join(images, rel), rel.split("/")[0])
                       for rel in f.read().split()]
  return folder.write("mit_indoor67", data_dir, classes, splits, overwrite=overwrite,
                      description="MIT Indoor-67 (Quattoni & Torralba, CVPR 2009).",
                      homepage="http://web.mit.edu/torralba/www/indoor.html")


def fgvc_aircraft(src: str, data_dir: str, overwrite: bool = False) -> str:
  """fgvc-aircraft-2013b (SRC or SRC/data) -> `fgvc_aircraft` (variants); its directory."""
  src = os.path.expanduser(src)
  root = os.path.join(src, "data") if os.path.isdir(os.path.join(src, "data")) else src
  variants = os.path.join(root, "variants.txt")
  if not os.path.isfile(variants):
    raise errors.UserError(f"{root} has no variants.txt: pass the extracted "
                           "fgvc-aircraft-2013b folder (it holds data/variants.txt)")
  with open(variants) as f:
    classes = [line.strip() for line in f if line.strip()]
  splits = {}
  for split in ("trainval", "test"):
    path = os.path.join(root, f"images_variant_{split}.txt")
    if not os.path.isfile(path):
      raise errors.UserError(f"{path} is missing: extract the whole fgvc-aircraft-2013b archive")
    with open(path) as f:
      rows = [line.strip().split(" ", 1) for line in f if line.strip()]
    splits[split] = [folder.Example(f"{image}.jpg", os.path.join(root, "images", f"{image}.jpg"),
                                    variant) for image, variant in rows]
  return folder.write("fgvc_aircraft", data_dir, classes, splits, overwrite=overwrite,
                      description="FGVC-Aircraft 2013b, variant level (Maji et al., 2013).",
                      homepage="https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/")


DATASETS = {"mit_indoor67": mit_indoor67, "fgvc_aircraft": fgvc_aircraft}


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  overwrite = "--overwrite" in argv
  args = [a for a in argv if a != "--overwrite"]
  if len(args) != 3 or args[0] not in DATASETS:
    print(f"usage: python -m kdjax.data.prepare {{{'|'.join(DATASETS)}}} SRC DATA_DIR "
          "[--overwrite]", file=sys.stderr)
    return 2
  try:
    path = DATASETS[args[0]](args[1], args[2], overwrite=overwrite)
  except errors.UserError as e:  # one line, no traceback, as kdjax's commands
    print(f"error: {e}", file=sys.stderr)
    return errors.EXIT_USER_ERROR
  print(f"prepared {args[0]} in {path}; train on it with --config.data.data_dir={args[2]}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
