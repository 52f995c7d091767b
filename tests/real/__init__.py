"""Optional suites against real upstream services (marker ``real``); skipped unless enabled."""
