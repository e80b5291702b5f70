"""Add and list notes; /stats/ shows the pool's statistics."""

import json

from django.db import connection, transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from .models import Note


@csrf_exempt
@require_POST
def add_note(request: HttpRequest) -> JsonResponse:
    data = json.loads(request.body)
    with transaction.atomic():
        note = Note.objects.create(owner=int(data["owner"]), text=str(data["text"]))
        count = Note.objects.filter(owner=note.owner).count()
    return JsonResponse({"id": note.id, "owner": note.owner, "text": note.text, "count": count})


@require_GET
def list_notes(request: HttpRequest, owner: int) -> JsonResponse:
    texts = list(Note.objects.filter(owner=owner).order_by("id").values_list("text", flat=True))
    return JsonResponse({"owner": owner, "texts": texts})


@require_GET
def pool_stats(request: HttpRequest) -> JsonResponse:
    return JsonResponse(connection.pool.get_stats())
