"""Array helpers on image batches [B, H, W, C] shared by the data pipeline, the teachers' views
and the checkpoints' preprocessing."""


def central_crop(x, frac: float):
  """[B,H,W,C] -> its central round(H x frac) x round(W x frac), torchvision CenterCrop's
  rounding of the offsets."""
  if frac >= 1.0:
    return x
  h, w = x.shape[1:3]
  ch, cw = int(round(h * frac)), int(round(w * frac))
  y0, x0 = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
  return x[:, y0:y0 + ch, x0:x0 + cw]
