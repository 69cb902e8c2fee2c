uint8_t *image_alloc_pixels(struct image *img)
{
    size_t size;

    if (img->width == 0 || img->height == 0 || img->channels == 0)
        return NULL;
    size = img->width * img->height * img->channels;
    img->pixels = malloc(size);
    if (img->pixels == NULL)
        return NULL;
    memset(img->pixels, 0, size);
    return img->pixels;
}
