"""llama.cpp through llama-cpp-python."""
