"""`dppp pretrain`: CLIP-style image-text pretraining of the project's own tiny CLIP."""
