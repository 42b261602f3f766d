"""dermnet's progressive-growing InfoGAN trained with WGAN-GP (study 1, section 2.4).

The generator and discriminator grow block by block from 4x4 to 512x512 (Karras et al.
2018); a structured InfoGAN code (Chen et al. 2016) is split into parts fed to the
generator's blocks, and a Q head sharing the discriminator's trunk recovers it.

    layers.py    equalized-learning-rate dense and conv, pixel norm, minibatch stddev
    losses.py    WGAN critic / generator losses, gradient and drift penalties, InfoGAN loss
    schedule.py  images seen -> (resolution, fade-in weight, phase, batch size, learning rate)
    networks.py  the progressive generator and discriminator (with the InfoGAN Q head)
    codes.py     latent / structured code batches; the square rule for 600x450 images
    config.py    GanConfig: data, network, schedule, training; presets paper / phantom / smoke
    data.py      real images squared, cached once, averaged down per stage
    clinical.py  clinical codes (age, sex, site): encoded real rows grouped by class
    model.py     InfoGAN(keras.Model): train_step with critic steps, penalties, Q loss, EMA
    train.py     train_gan(config, workdir): stages, resumable checkpoints, TensorBoard, grids
    generate.py  a finished run -> synthetic images as a HAM10000-layout dataset
    assess.py    the paper's test (classify synthetic images), kernel distance, grids

Imports point one way: ``gan`` uses ``dermnet`` (data and config; the training package's
atomic writes and strategies; inference and evaluation for ``assess``) rather than copying
it; ``dermnet`` never imports ``gan``.
"""
