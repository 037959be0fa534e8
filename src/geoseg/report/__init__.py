"""``geoseg report``: gather a sweep folder's ``summary.json`` files into tables and plots."""
