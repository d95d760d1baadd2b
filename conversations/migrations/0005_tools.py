from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('conversations', '0004_branches_presets'),
    ]

    operations = [
        migrations.AddField(
            model_name='conversation',
            name='tools',
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.AddField(
            model_name='message',
            name='tool_calls',
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.AddField(
            model_name='message',
            name='tool_call_id',
            field=models.CharField(blank=True, max_length=100),
        ),
    ]
