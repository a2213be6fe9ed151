"""Which packages the wheel holds; everything else is in pyproject.toml.

A pyproject.toml `packages.find` cannot also install a folder from outside the package
under the package's name, so this file does it: the recipes live at the top of a checkout
(`configs/`, where the commands name them) and are installed as `prune_ofa_jax/configs/`,
where `paths.recipes_dir()` finds them in an installed package.
"""

import setuptools

setuptools.setup(
    packages=setuptools.find_packages(include=["prune_ofa_jax*"])
    + ["prune_ofa_jax.configs"],
    package_dir={"prune_ofa_jax.configs": "configs"},
)
