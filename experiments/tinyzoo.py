"""The tiny offline zoo (moved to :mod:`recommender.zoo`, which ``recommender demo --zoo`` uses:
``recommender/`` never imports ``experiments/``). Kept so that experiments and tests can import it here."""
from recommender.zoo import (META, SIZE, SOURCES, TOPICS, build_bed, build_zoo, fill_history,  # noqa: F401
                             make_images, write_image_folder, write_text_task, zoo_models_meta)
