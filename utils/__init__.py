"""Small pieces shared by unet_circles.py and evaluate_unet.py."""
