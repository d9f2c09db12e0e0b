"""Device simulator. This release has the simple publisher used by the demo; the fleet simulator follows."""
