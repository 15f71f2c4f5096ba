"""Memory: reading memray captures and writing reports from them."""
