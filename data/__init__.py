"""Image datasets: ImageFolder trees, flat folders, labels files, stratified samples, cached decoding."""
