"""Results: the store and its record keys, reading runs back, the leaderboard, its renderings, check and report."""
