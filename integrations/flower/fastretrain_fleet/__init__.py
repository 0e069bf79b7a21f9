"""fastretrain on a fleet: devices learn one exact ridge head through Flower.

Each device (a Flower SuperNode running :mod:`.client_app`) streams its own images through the
frozen backbone into Gram statistics and sends only the statistics of samples the server has
not yet acknowledged - never an image, never a path. The server (:mod:`.server_app`) keeps each
device's running statistics, adds them up in a fixed order (bit-identical to ``fastretrain
merge`` of the devices' states in that order), solves the head (lambda by GCV) and sends it back.
"""
