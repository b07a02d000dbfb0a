"""The per-hit feature columns numl.data.km3net builds (`hit_features`), by name; the hit networks look up
their columns here, so that neither the order nor the count is written twice."""

HIT_FEATURES = ("x", "y", "z", "dir_x", "dir_y", "dir_z", "light_time", "tot", "triggered", "x_event", "y_event",
                "z_event")
