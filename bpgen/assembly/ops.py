"""Every assembly op class (importing this module registers them)."""
from .append_ones import AppendOnes
from .chain import ChainStart, ScaleColumns, SharedProduct
from .kron_block import KronBlock
from .loss_curvature import LossCurvature
from .sample_product import SampleProduct
from .sandwich import Sandwich
from .symmetry import AddL2, Mirror

__all__ = ["AppendOnes", "ChainStart", "ScaleColumns", "SharedProduct", "KronBlock",
           "LossCurvature", "SampleProduct", "Sandwich", "AddL2", "Mirror"]
