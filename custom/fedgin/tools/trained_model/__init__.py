"""Using a trained model: its Dice on a site's split, masks for new scans, a MONAI bundle."""
