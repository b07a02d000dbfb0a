"""The per-hit feature columns numl.data.km3net builds (`hit_features`), by name; the hit networks look up
their columns here, so that neither the order nor the count is written twice."""

HIT_FEATURES = ("x", "y", "z", "dir_x", "dir_y", "dir_z", "light_time", "tot", "triggered", "x_event", "y_event",
                "z_event")
#: appended with data.prefit (numl.data.km3net.prefit_frame_features): the hit's position relative to the prefit
#: track's point and its PMT's direction, both in the track's frame (track along +z), the time residual of the hit
#: w.r.t. the track's direct Cherenkov light, and the distance to the track
PREFIT_FRAME_FEATURES = ("x_track", "y_track", "z_track", "dir_x_track", "dir_y_track", "dir_z_track",
                         "time_residual", "distance_to_track")


def hit_feature_names(prefit: str = "none") -> tuple[str, ...]:
    """The feature columns for data.prefit (`none`: the detector-frame features only)."""
    return HIT_FEATURES if prefit == "none" else HIT_FEATURES + PREFIT_FRAME_FEATURES
