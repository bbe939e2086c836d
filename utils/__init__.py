"""Small pieces shared by unet_circles.py, evaluate_unet.py and deep_image_prior.py."""
