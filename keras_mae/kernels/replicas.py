from keras import ops

from keras_mae.kernels.kernel import Kernel


def reference_scale(loss):
    return loss


def tf_replica_scale(loss):
    """Divide by the `tf.distribute` replica count, as Keras' losses do.

    Under a `tf.distribute` strategy each replica's gradients are summed, so
    a per-replica mean loss must be scaled for the update to equal one
    device's. Without a strategy (or with one replica) the loss is unchanged.
    """
    import tensorflow as tf

    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas > 1:
        loss = ops.multiply(loss, ops.cast(1.0 / replicas, loss.dtype))
    return loss


scale_loss_for_replicas = Kernel(
    "scale_loss_for_replicas", reference_scale, tensorflow=tf_replica_scale
)
