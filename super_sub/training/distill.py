"""Knowledge distillation into a specialist (Hinton et al. 2015, "Distilling the knowledge in a
neural network", whose specialists learned from a generalist's soft targets).

A specialist sees only its superclass's images, so its hard labels say nothing about how alike
its subclasses are; the flat network, trained on every subclass, does. The teacher's logits of
the superclass's subclass columns, softened by a temperature T, become a second target:

  loss = (1 - w) * CE(label, softmax(s)) + w * T^2 * KL(softmax(t / T) || softmax(s / T))

with s the specialist's logits and t the teacher's logits of the specialist's subclasses
(`columns`). The T^2 keeps the soft term's gradients on the scale of the hard term's as T
grows (Hinton et al., section 2). w = 0 is plain training.

`distilled(model, ...)` returns a model over the same layers (so the same variables: train
it, save `model`) whose `compute_loss`, Keras's documented hook for a custom loss in `fit`,
adds the soft term. The teacher runs in inference mode and is not trained; it is kept out of
the model's tracked variables, so checkpoints and weight checks cover the specialist only.
"""

from __future__ import annotations

import tensorflow as tf

from super_sub._internal.compat import keras


def distillation_loss(labels: tf.Tensor, student_logits: tf.Tensor, teacher_logits: tf.Tensor,
                      temperature: float, weight: float) -> tf.Tensor:
  """Mean over the batch of the loss in the module docstring.

  Args:
    labels: [B] integer class indices of the student's classes.
    student_logits, teacher_logits: [B, C] logits over the same C classes.
    temperature: T > 0.
    weight: w in [0, 1], the soft term's share.
  """
  check(temperature, weight)
  labels = tf.cast(tf.reshape(labels, [-1]), tf.int32)
  student_logits = tf.cast(student_logits, tf.float32)
  teacher_logits = tf.stop_gradient(tf.cast(teacher_logits, tf.float32))
  hard = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=student_logits)
  teacher = tf.nn.softmax(teacher_logits / temperature)
  log_teacher = tf.nn.log_softmax(teacher_logits / temperature)
  log_student = tf.nn.log_softmax(student_logits / temperature)
  soft = tf.reduce_sum(teacher * (log_teacher - log_student), axis=-1)
  return tf.reduce_mean((1.0 - weight) * hard + weight * temperature ** 2 * soft)


def check(temperature: float, weight: float) -> None:
  """Raises ValueError unless T > 0 and w is in [0, 1]."""
  if not temperature > 0:
    raise ValueError(f"distillation temperature must be positive; got {temperature}")
  if not 0.0 <= weight <= 1.0:
    raise ValueError(f"distillation weight is the soft targets' share of the loss, in [0, 1]; "
                     f"got {weight}")


class DistilledModel(keras.Model):
  """A functional model whose training loss also follows a teacher's soft targets."""

  def __init__(self, inputs, outputs, teacher: keras.Model, columns: tuple[int, int],
               temperature: float, weight: float, **kwargs):
    super().__init__(inputs=inputs, outputs=outputs, **kwargs)
    check(temperature, weight)
    # Not tracked (object.__setattr__ skips Keras's attribute tracking): the teacher's
    # variables stay out of this model's weights, checkpoints and non-finite checks.
    object.__setattr__(self, "_teacher", teacher)
    self.columns = tuple(int(c) for c in columns)
    self.temperature = float(temperature)
    self.weight = float(weight)
    # Keras's own compute_loss reports `loss` through the compiled loss; this one replaces it
    # (untracked too: its running mean is not a weight of the model).
    object.__setattr__(self, "loss_tracker", keras.metrics.Mean(name="loss"))

  @property
  def metrics(self):
    return [self.loss_tracker] + super().metrics

  def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None):
    del sample_weight  # super-sub's pipelines give none
    lo, hi = self.columns
    teacher_logits = self._teacher(x, training=False)[:, lo:hi]
    loss = distillation_loss(y, y_pred, teacher_logits, self.temperature, self.weight)
    if self.losses:  # regularisation losses of the layers, as Keras's own compute_loss adds
      loss += tf.add_n(self.losses)
    self.loss_tracker.update_state(loss)
    return loss


def distilled(model: keras.Model, teacher: keras.Model, columns: tuple[int, int],
              temperature: float, weight: float) -> DistilledModel:
  """`model`'s layers, trained with the teacher's logits[:, lo:hi] (`columns`) as soft targets.

  Raises:
    ValueError: the teacher's columns are not as many as the model's outputs, or a bad
      temperature or weight.
  """
  lo, hi = columns
  if hi - lo != model.output_shape[-1] or not 0 <= lo < hi <= teacher.output_shape[-1]:
    raise ValueError(f"teacher {teacher.name!r} columns [{lo}, {hi}) of its "
                     f"{teacher.output_shape[-1]} outputs do not match the "
                     f"{model.output_shape[-1]} classes of {model.name!r}")
  if tuple(teacher.input_shape[1:]) != tuple(model.input_shape[1:]):
    raise ValueError(f"teacher {teacher.name!r} takes inputs of shape "
                     f"{tuple(teacher.input_shape[1:])}, {model.name!r} "
                     f"{tuple(model.input_shape[1:])}")
  return DistilledModel(model.inputs, model.outputs, teacher=teacher, columns=(lo, hi),
                        temperature=temperature, weight=weight, name=model.name)
