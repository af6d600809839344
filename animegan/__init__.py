"""anime studio: photos and videos to anime, and anime faces from noise.

Public API::

    import animegan
    net = animegan.load_generator("face_paint_512_v2")   # raw nn.Module, NCHW in [-1, 1]
    img = animegan.stylize("photo.jpg", style="face_paint_512_v2", keep_colors=True)
"""
from .errors import AnimeGANError
from .stylize import StyleOptions, Stylizer, get_stylizer, stylize
from .weights import available_styles, load_generator, save_weights

__all__ = ["AnimeGANError", "StyleOptions", "Stylizer", "available_styles", "get_stylizer", "load_generator",
           "save_weights", "stylize"]
__version__ = "0.1.0"
