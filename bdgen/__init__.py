"""bdgen: masked discrete diffusion for floorplan bubble diagrams, and the platform around it."""

__version__ = "0.1.0"
