from .dcclip_student import DCCLIPStudent, count_parameters
from .image_student import ImageStudent
from .text_student import TextStudent

__all__ = ["DCCLIPStudent", "ImageStudent", "TextStudent", "count_parameters"]
