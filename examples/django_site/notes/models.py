from django.db import models


class Note(models.Model):
    owner = models.IntegerField(db_index=True)
    text = models.CharField(max_length=200)
    created = models.DateTimeField(auto_now_add=True)
