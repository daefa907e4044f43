"""The marketplace: packages of tools imported from git repositories, published and installed."""
