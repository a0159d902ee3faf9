"""What comes in: InkML ink, its rendering, image preprocessing, and labelled datasets."""
