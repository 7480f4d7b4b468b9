"""What Hotline keeps: the database (peewee, SQLite or PostgreSQL), the models and their migrations,
and the reads and writes the shells and the API share (calls, schedules, verification codes, Call Log
rows, API keys). Plain synchronous functions, run through the asyncio database's bridge."""
